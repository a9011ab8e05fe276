"""fourd_ros.core.data."""
