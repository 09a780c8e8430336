"""The CLI's commands that are more than a thin function in ringctl/cli.py. The top layer (docs/architecture.md):
a command may import any package of ringctl, and nothing in ringctl imports a command."""
