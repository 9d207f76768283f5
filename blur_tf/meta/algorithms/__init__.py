"""Outer algorithms run by `blur_tf.meta.outer_loop.OuterLoop`; registered in
`blur_tf.meta.registry`."""
