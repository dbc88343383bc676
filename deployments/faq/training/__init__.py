"""Training and evaluation of the FAQ model, apart from serving (nothing serving imports this package but the
embedded demo, which trains at replica start): fit.py fits a FaqModel, folds.py picks the held-out
duplicates, evaluate.py measures ranking quality and calibration, train.py does all of it for `serve-app faq
train`."""
