"""Class names of the benchmarks, in label-index order, as plain text that a text encoder can read.

Names follow each dataset's public definition; concatenated spellings are written as words
("pottedplant" -> "potted plant") and the VOC classes use the TAG reference wording (airplane,
dining table, tv monitor) wherever they occur, because the name-mapping protocols embed these strings.
COCO-Stuff's "-other"/"-stuff" suffixes are dropped and compounds read naturally ("floor-marble" ->
"marble floor").
"""

from __future__ import annotations

import numpy as np


def _names(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.strip().splitlines())


VOC: tuple[str, ...] = _names(
    """
    background
    airplane
    bicycle
    bird
    boat
    bottle
    bus
    car
    cat
    chair
    cow
    dining table
    dog
    horse
    motorbike
    person
    potted plant
    sheep
    sofa
    train
    tv monitor
    """
)

CONTEXT59: tuple[str, ...] = _names(
    """
    airplane
    bag
    bed
    bedclothes
    bench
    bicycle
    bird
    boat
    book
    bottle
    building
    bus
    cabinet
    car
    cat
    ceiling
    chair
    cloth
    computer
    cow
    cup
    curtain
    dog
    door
    fence
    floor
    flower
    food
    grass
    ground
    horse
    keyboard
    light
    motorbike
    mountain
    mouse
    person
    plate
    platform
    potted plant
    road
    rock
    sheep
    shelves
    sidewalk
    sign
    sky
    snow
    sofa
    table
    track
    train
    tree
    truck
    tv monitor
    wall
    water
    window
    wood
    """
)

ADE150: tuple[str, ...] = _names(
    """
    wall
    building
    sky
    floor
    tree
    ceiling
    road
    bed
    windowpane
    grass
    cabinet
    sidewalk
    person
    earth
    door
    table
    mountain
    plant
    curtain
    chair
    car
    water
    painting
    sofa
    shelf
    house
    sea
    mirror
    rug
    field
    armchair
    seat
    fence
    desk
    rock
    wardrobe
    lamp
    bathtub
    railing
    cushion
    base
    box
    column
    signboard
    chest of drawers
    counter
    sand
    sink
    skyscraper
    fireplace
    refrigerator
    grandstand
    path
    stairs
    runway
    case
    pool table
    pillow
    screen door
    stairway
    river
    bridge
    bookcase
    blind
    coffee table
    toilet
    flower
    book
    hill
    bench
    countertop
    stove
    palm
    kitchen island
    computer
    swivel chair
    boat
    bar
    arcade machine
    hovel
    bus
    towel
    light
    truck
    tower
    chandelier
    awning
    streetlight
    booth
    television receiver
    airplane
    dirt track
    apparel
    pole
    land
    bannister
    escalator
    ottoman
    bottle
    buffet
    poster
    stage
    van
    ship
    fountain
    conveyer belt
    canopy
    washer
    plaything
    swimming pool
    stool
    barrel
    basket
    waterfall
    tent
    bag
    minibike
    cradle
    oven
    ball
    food
    step
    tank
    trade name
    microwave
    pot
    animal
    bicycle
    lake
    dishwasher
    screen
    blanket
    sculpture
    hood
    sconce
    vase
    traffic light
    tray
    ashcan
    fan
    pier
    crt screen
    plate
    monitor
    bulletin board
    shower
    radiator
    glass
    clock
    flag
    """
)

COCO_STUFF171: tuple[str, ...] = _names(
    """
    person
    bicycle
    car
    motorcycle
    airplane
    bus
    train
    truck
    boat
    traffic light
    fire hydrant
    stop sign
    parking meter
    bench
    bird
    cat
    dog
    horse
    sheep
    cow
    elephant
    bear
    zebra
    giraffe
    backpack
    umbrella
    handbag
    tie
    suitcase
    frisbee
    skis
    snowboard
    sports ball
    kite
    baseball bat
    baseball glove
    skateboard
    surfboard
    tennis racket
    bottle
    wine glass
    cup
    fork
    knife
    spoon
    bowl
    banana
    apple
    sandwich
    orange
    broccoli
    carrot
    hot dog
    pizza
    donut
    cake
    chair
    couch
    potted plant
    bed
    dining table
    toilet
    tv
    laptop
    mouse
    remote
    keyboard
    cell phone
    microwave
    oven
    toaster
    sink
    refrigerator
    book
    clock
    vase
    scissors
    teddy bear
    hair drier
    toothbrush
    banner
    blanket
    branch
    bridge
    building
    bush
    cabinet
    cage
    cardboard
    carpet
    ceiling
    ceiling tile
    cloth
    clothes
    clouds
    counter
    cupboard
    curtain
    desk
    dirt
    door
    fence
    marble floor
    floor
    stone floor
    tile floor
    wood floor
    flower
    fog
    food
    fruit
    furniture
    grass
    gravel
    ground
    hill
    house
    leaves
    light
    mat
    metal
    mirror
    moss
    mountain
    mud
    napkin
    net
    paper
    pavement
    pillow
    plant
    plastic
    platform
    playingfield
    railing
    railroad
    river
    road
    rock
    roof
    rug
    salad
    sand
    sea
    shelf
    sky
    skyscraper
    snow
    solid
    stairs
    stone
    straw
    structural
    table
    tent
    textile
    towel
    tree
    vegetable
    brick wall
    concrete wall
    wall
    wall panel
    stone wall
    tile wall
    wood wall
    water
    waterdrops
    window blind
    window
    wood
    """
)

CITYSCAPES19: tuple[str, ...] = _names(
    """
    road
    sidewalk
    building
    wall
    fence
    pole
    traffic light
    traffic sign
    vegetation
    terrain
    sky
    person
    rider
    car
    truck
    bus
    train
    motorcycle
    bicycle
    """
)

# COCO-Stuff stuffthingmaps store ``COCO id - 1``; these are the 171 ids in use (11 thing ids are unused).
_COCO_UNUSED_THING_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
COCO_STUFF_RAW_IDS: tuple[int, ...] = tuple(i for i in range(182) if i not in _COCO_UNUSED_THING_IDS)

# Cityscapes ``labelIds`` of the 19 evaluated classes, in trainId order.
CITYSCAPES_LABEL_IDS: tuple[int, ...] = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


def lookup_table(raw_ids: tuple[int, ...] | range, ignore_index: int = 255) -> np.ndarray:
    """A 256-entry table sending ``raw_ids[k]`` to ``k`` and every other byte to ``ignore_index``."""
    table = np.full(256, ignore_index, dtype=np.uint8)
    table[list(raw_ids)] = np.arange(len(raw_ids), dtype=np.uint8)
    return table
