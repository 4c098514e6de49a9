"""Text for training and evaluation: the data loader the distillation and evaluation stages share
(``texts``), the out-of-domain corpora (``corpora``) and the cache folder (``cache``)."""
