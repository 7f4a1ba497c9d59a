"""A Label Studio ML backend with a live active-learning loop for tweet classification.

Data flows one way: request -> model -> uncertainty -> response; webhook -> queue -> worker -> model registry
-> Label Studio.

    api.py            the ML backend protocol over HTTP (create_app); wsgi.py runs it under gunicorn
    predictions.py    tasks -> probabilities -> uncertainty scores -> one prediction slot per task
    uncertainty.py    margin, least confidence, entropy over (n, k) probabilities
    model_store.py    which version serves which project in a server process, swapped on promotion
    registry.py       versions on disk: naming, staging, atomic promotion, pruning
    export.py         the notebook's table (most uncertain first) from a CSV or a project
    tables.py         the one CSV reader and table writer
    settings.py       configuration from the environment; errors.py every exception; metrics.py Prometheus
    cli.py            `python -m backend ...`
    models/           model kinds behind one protocol, training, the one loader
    labelstudio/      label config (the one Choices region builder), client, project setup
    retraining/       when to retrain (Redis), the RQ jobs
    stack/            the local stack (make run, e2e tests) and the demo project
"""
