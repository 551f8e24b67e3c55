"""datapolis: the platform's command line, a client of the services' HTTP APIs."""
