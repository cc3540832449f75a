"""Business logic of the crowd side, one module per concern; views, commands and tasks call it."""
