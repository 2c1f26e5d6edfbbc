"""Section 5.2 on a real model: token-level versus domain shift on preference text.

The toolkit's own preference set lives in data/section52/ (written for the toolkit; the paper's
UltraFeedback, rewrite, translation and RewardBench data stay on the user's path):

    train.jsonl        everyday questions, a better and a worse answer (worse on substance)
    indist.jsonl       new questions of the same kind (in distribution)
    paraphrase.jsonl   the indist pairs, both responses in other words   } token-level shift,
    french.jsonl       the indist pairs in French                         } each row naming its
    spanish.jsonl      the indist pairs in Spanish                        } source_index
    math.jsonl         short math questions, a correct and a wrong worked answer   } domain shift
    code.jsonl         short Python tasks, a correct and a buggy function          }

Modules: card (the data card: sizes, lengths in tokens, token overlap with the source); report
(EX-RM against IM-RM per set and per kind of shift, with bootstrap intervals and a paired test,
from a `python -m sims.hf train` run).
"""
