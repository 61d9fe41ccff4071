"""``python -m art_diffpure.commands ...``: the same as the ``art-diffpure`` console script."""
import sys

from art_diffpure.commands import main

sys.exit(main())
