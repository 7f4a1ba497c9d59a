"""The local stack of `make run` and of the end-to-end tests, without Docker.

processes.py   starting and stopping the services as processes: Redis, Label Studio, backend, workers
launcher.py    LocalStack (the services of docker-compose.yml with the same settings) and `make run`
demo.py        the demo project: the shipped demo tweets (demo/*.csv) and its setup
"""
