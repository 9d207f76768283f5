"""blur_tf: meta-learning bidirectional update rules (BLUR) in TensorFlow/Keras."""

from blur_tf.genome import Genome
from blur_tf.layers import BlurDense
from blur_tf.meta import CmaTrainer, MetaTrainer
from blur_tf.network import BlurModel, BlurNetwork
from blur_tf.rule import Rule

__all__ = ["Genome", "Rule", "BlurDense", "BlurNetwork", "BlurModel", "MetaTrainer", "CmaTrainer"]
