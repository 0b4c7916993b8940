"""What a running program needs: settings, keys and its `Connection`, the devnet file, state
files, riding out outages, crash points, timings."""
