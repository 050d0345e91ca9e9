"""The ML and control core. Never imports rclpy: everything here is unit-testable without ROS."""
