"""TaskFlow decorators of the provider (registered through provider info ``task-decorators``)."""
