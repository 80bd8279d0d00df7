"""The programs jaxmnist is measured against, each speaking the metrics protocol of `_common`."""
