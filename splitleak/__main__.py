import sys

from splitleak.cli.main import main

sys.exit(main())
