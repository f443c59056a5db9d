"""Data sets and loaders: in-memory uint8 arrays with a fast on-device batched path, and ImageFolder loaders.

Each data set's facts (classes, image size, mean/std, where it comes from) live in one ``DatasetSpec``
(``DATASETS``). Small-image data sets (CIFAR-100, Tiny ImageNet, digits) load into ``ImageArrays`` and are served by
``DeviceLoader`` (airbench style: the data set lives on the device, batches are slices of a seeded permutation,
augmentation is batched). Large images (ImageNet, any ImageFolder) use ``build_folder_loader``.
"""

from .arrays import ImageArrays, per_class_subset, split_train_val
from .cifar100 import download_cifar100
from .device_loader import DeviceLoader, augment_batch
from .download import data_home
from .folder import FolderSplit, build_folder_loader, folder_transforms
from .specs import AUGMENTATIONS, DATASETS, DatasetSpec, dataset_spec, default_root, load_arrays
from .tinyimagenet import download_tinyimagenet

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DatasetSpec",
    "DeviceLoader",
    "FolderSplit",
    "ImageArrays",
    "augment_batch",
    "build_folder_loader",
    "data_home",
    "dataset_spec",
    "default_root",
    "download_cifar100",
    "download_tinyimagenet",
    "folder_transforms",
    "load_arrays",
    "per_class_subset",
    "split_train_val",
]
