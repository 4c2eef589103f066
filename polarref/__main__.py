from polarref.cli import main
import sys
sys.exit(main())
