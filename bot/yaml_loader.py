"""The YAML loader content files are read with: libyaml's safe loader where PyYAML was built
with it (several times faster, which matters at every start), the pure-Python one otherwise.
Both report the same line and column on a syntax error."""

from __future__ import annotations

import yaml

SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
