"""The function SDK, importable outside isolates: `from edgefn import Request, Response`.

Inside an isolate `edgefn` is the guest package itself (isolates/guest/edgefn, standard library
only); here it is the same package re-exported, so a handler imports, type-checks and unit-tests
(`edgefn.testing`) exactly as it runs on a node.
"""

from isolates.guest.edgefn import *  # noqa: F403
from isolates.guest.edgefn import __all__ as __all__
