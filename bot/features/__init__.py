"""The bot's features, one package each (cog, buttons, logic); `bot.core.bot.EXTENSIONS` loads them
in order, and the `bot-features` import contract keeps each to the features below it."""
