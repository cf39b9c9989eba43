"""One cog per modality or feature: they turn commands, buttons and modals into jobs."""
