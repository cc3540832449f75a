"""Business logic of the crowd side, one module per concern. Views, commands and tasks call these."""
