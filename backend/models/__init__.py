"""Model kinds behind one seam.

base.py         the TextClassifier protocol every kind implements, held-out evaluation, the labels check
transformer.py  a Hugging Face sequence classifier (inference; load and save)
finetune.py     fitting it with the transformers Trainer, and its recipe (TrainConfig.from_settings)
training.py     labels -> check -> hold-out split -> fit -> evaluate -> a stored registry version
loader.py       the one way to load a version (by the `kind` in its metadata) or the base model
preprocess.py   tweet normalization, the same at training and prediction time
"""
