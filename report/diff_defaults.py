"""The default tolerances of `expc diff`, in a module without torch so that the command line
can show them in its help without loading the comparison itself (`report/diff.py`)."""

DEFAULT_ATOL = 1e-6  # absolute
DEFAULT_RTOL = 1e-5  # relative to run B's values
