"""The HTTP face: OpenAI Chat Completions, OpenAI Responses and Anthropic Messages over
the router, so the work people do in Codex CLI, Claude Code, aider and Continue runs
under Switchyard's policy (decide, approval, budget, audit, local_only)."""
