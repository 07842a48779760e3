"""Many runs: sweeps, their launchers and the report over them."""
