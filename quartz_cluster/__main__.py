from quartz_cluster.cli import main

raise SystemExit(main())
