"""Data sets and loaders: in-memory uint8 arrays with a fast on-device batched path, and ImageFolder loaders.

Small-image data sets (CIFAR-100, Tiny ImageNet, digits) load into ``ImageArrays`` and are served by
``DeviceLoader`` (airbench style: the data set lives on the device, batches are slices of a seeded permutation,
augmentation is batched). Large images (ImageNet, any ImageFolder) use ``build_folder_loader``.
"""

from .arrays import NORMALIZATION, ImageArrays, split_train_val
from .cifar_pickle import download_cifar100
from .device_loader import AUGMENTATIONS, DeviceLoader, augment_batch
from .folder import FolderSplit, build_folder_loader, folder_transforms
from .sources import DATASETS, load_arrays

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "NORMALIZATION",
    "DeviceLoader",
    "FolderSplit",
    "ImageArrays",
    "augment_batch",
    "build_folder_loader",
    "download_cifar100",
    "folder_transforms",
    "load_arrays",
    "split_train_val",
]
