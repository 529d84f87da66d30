"""Wrong numbers: catch them in the step they happen, name the replica, recover in-band.

``fingerprint`` (bit-exact state and gradient fingerprints), ``stats`` (robust baselines that flag spikes), ``judge`` (the leader's triggers and verdicts,
pure), the config is ``train.config.NumericsConfig``. The replicas package measures and
re-executes (``replicas/numeric_member.py``) and acts on verdicts (``replicas/numeric_round.py``); ``docs/fault-model.md`` says what is caught and what is not.
"""
