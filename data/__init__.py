"""Text for training and evaluation: the data loader the distillation and evaluation stages share
(``texts``), the one way from documents to token windows they share (``packing``), the out-of-domain
corpora (``corpora``) and the cache folder (``cache``)."""
