"""The labels hostos puts on every container it makes: the engine is the node's state store.

docs/design.md ("Hashes and labels") says what each holds.  A unit's own labels may not use
the prefix (hostos.site.model refuses it).
"""

HOSTOS_PREFIX = "io.hostos."
OWNER_LABEL = "io.hostos.owner"
OWNER = "hostos"
ROLE_LABEL = "io.hostos.role"
UNIT_LABEL = "io.hostos.unit"
HASH_LABEL = "io.hostos.hash"  # the container spec's hash, image ID included
UNIT_HASH_LABEL = "io.hostos.unit-hash"  # the resolved unit's hash (hostos render)
SPEC_LABEL = "io.hostos.spec"  # the hashed spec as canonical JSON, for precise reasons
DEPS_LABEL = "io.hostos.deps"  # units this one starts after, for `hostos down` order
NAMESPACE_LABEL = "io.hostos.namespace"  # set when several hostos instances share an engine
PROBE_LABEL = "io.hostos.probe"  # on a short-lived container an adapter makes to learn defaults
