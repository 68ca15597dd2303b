"""Turn-taking on real recorded human speech (issue 26): the set, the bench, the Pipecat comparison."""
