"""labeler: label a folder of images with the help of a pretrained CNN's view of them."""
__version__ = "0.1.0"
