"""The controller's API as its two clients use it, the `paas` command (`paas.cli`) and the git
pre-receive hook (`paas.git.hook`): the HTTP client, assembling a source, the release reuse
rule, a build's streamed log and following a deployment, with the exit codes and the one error
type they share. The hook imports this, not the CLI, so the controller never loads the CLI."""
