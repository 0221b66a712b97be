"""The typed stack configuration: models, environment defaults, cross-field rules and the project's fixed names."""
