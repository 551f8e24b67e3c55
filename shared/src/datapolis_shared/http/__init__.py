"""HTTP edge shared by the services: app factory, problem details, middleware."""
