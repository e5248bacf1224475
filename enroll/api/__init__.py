"""Enrolment as a service: ``enroll serve`` runs this FastAPI app under uvicorn.

    app.py            create_app(home, settings): the app, its middleware, routes and error handlers
    settings.py       ApiSettings: limits, CORS, the embedding server; passed to uvicorn's workers
    context.py        what the routes share: the gallery (with its live index), tokens, the embedder
    live_index.py     the search index kept in step with the gallery (a gallery_version check)
    auth.py           bearer tokens and their scopes (enroll/tokens.py stores them)
    errors.py         one-line JSON errors with status codes; never a stack trace
    limits.py         request body, photo count and photo size limits (413)
    people.py         POST/GET/DELETE /v1/people
    queries.py        POST /v1/identify, /v1/verify
    jobs.py           POST/GET/DELETE /v1/retrain
    system.py         GET /v1/status, /healthz, /readyz; /v1/tokens (admin)
    web.py            the page at / (static/: plain HTML and JS)
    serve.py          the ``enroll serve`` command

Business logic stays in enroll/ (service.py, operations.py, status.py, retrain.py): the routes
turn HTTP into their arguments and their results into JSON.
"""


def create_app(*args, **kwargs):
    from enroll.api.app import create_app as create

    return create(*args, **kwargs)
