"""Named pretraining recipes and benchmark protocols (data only), installed as nnunet_ssl.recipes."""
