"""Everything about Label Studio.

label_config.py     the parsed label config: classes, the one Choices region builder and reader, task text
label_config.xml    the tweet project's config (ok / xenófobo), shipped as package data
client.py           what the jobs ask of Label Studio (labels, unlabeled tasks, predictions), with retries
project_setup.py    a project ready for the loop: tasks, backend connection, sampling, Data Manager tabs
"""
