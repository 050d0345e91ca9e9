"""Thin rclpy nodes: parameters, message <-> array conversion, callbacks. The logic lives in `core`."""
