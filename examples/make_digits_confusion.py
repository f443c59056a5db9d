"""Write examples/digits_confusion.npy: a real 10x10 confusion matrix for `ssal group` to try.

A logistic regression on scikit-learn's digits, 5-fold cross-validated predictions, counts.
Run: python examples/make_digits_confusion.py
"""

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import cross_val_predict

x, y = load_digits(return_X_y=True)
pred = cross_val_predict(LogisticRegression(max_iter=5000, C=0.002), x, y, cv=5)
conf = confusion_matrix(y, pred).astype(np.int64)
out = Path(__file__).with_name("digits_confusion.npy")
np.save(out, conf)
print(f"accuracy {np.trace(conf) / conf.sum():.3f}; wrote {out}")
