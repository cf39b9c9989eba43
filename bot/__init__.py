"""The Discord side of natty: the bot, configuration, the job engine, storage, delivery, translations."""
