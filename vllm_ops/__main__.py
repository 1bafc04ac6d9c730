from vllm_ops.cli import main

raise SystemExit(main())
