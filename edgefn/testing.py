"""Call a handler of any kind in-process, as a node calls it: `from edgefn.testing import call`.

The guest package's `edgefn.testing` (isolates/guest/edgefn/testing.py), re-exported like `edgefn`.
"""

from isolates.guest.edgefn.testing import *  # noqa: F403
from isolates.guest.edgefn.testing import __all__ as __all__  # noqa: PLC0414
