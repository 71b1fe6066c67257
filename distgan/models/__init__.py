"""Networks. Each carries its own hyper-parameters in ``hparams`` (used by ``distgan export``)."""
