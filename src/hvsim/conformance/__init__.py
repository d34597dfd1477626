"""hvsim's conformance suite for environments: the probe kernel under the environment observes the
MachineConfig, and where it observes something else than under bare metal, the environment's plugin
declared it.  Run it against any installed environment (the option comes with hvsim's pytest plugin)::

    pytest --pyargs hvsim.conformance --hvsim-env my_env
"""
