"""The demo: `python -m tools.demo` (a whole confidential deployment on this machine) and
`python -m tools.demo --loopback` (the chain of trust on loopback, no VM); see docs/demo.md."""
