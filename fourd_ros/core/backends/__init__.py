"""fourd_ros.core.backends."""
