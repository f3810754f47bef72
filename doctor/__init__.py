"""Setup checks: the environment against its locks (`locks`), and `intercept-rl doctor` (`checks`, `cli`)."""
