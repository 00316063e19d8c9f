from glob import glob

from setuptools import find_packages, setup

package_name = "world_env_bringup"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/params", glob("params/*.yaml")),
        ("share/" + package_name + "/rviz", glob("rviz/*.rviz")),
    ],
    install_requires=["setuptools"],
    # colcon runs a package's tests with pytest only when it is declared here.
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="world-env developers",
    maintainer_email="dev@world-env.invalid",
    description="world-env bring-up: launch file, parameter files, node graph, rviz configuration.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "bag_recorder_node = world_env_bringup.bag_recorder_node:main",
        ],
    },
)
