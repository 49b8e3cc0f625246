"""Sources of the bridges to real CSPs (``capi/bridge.c``), shipped with the package so that ``load("capi")``
can build its bridge wherever keyhandoff is installed. No Python here."""
