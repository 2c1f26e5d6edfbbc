from sims.persona_real import main

raise SystemExit(main())
