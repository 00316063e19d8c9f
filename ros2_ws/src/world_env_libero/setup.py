from setuptools import find_packages, setup

package_name = "world_env_libero"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml", "README.md"]),
    ],
    install_requires=["setuptools"],
    # colcon runs a package's tests with pytest only when it is declared here.
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "libero_robot_node = world_env_libero.robot_node:main",
        ],
    },
    maintainer="world-env developers",
    maintainer_email="dev@world-env.invalid",
    description=("LIBERO simulator as a ROS-free environment core (single and multi-process) and a ROS 2 "
                 "hardware stand-in node (camera, joint states, joint trajectory controllers)."),
    license="Apache-2.0",
)
