"""One module per ``elfatt-deploy`` subcommand (see ``elfatt_deploy.cli``)."""
